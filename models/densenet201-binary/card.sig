{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "lLT7Yi/dk7oyWYWvOzUI4Uyf/uNifHPaca+U+TMJqms8GrlpFJWzcZuDJgO01S8HG3Afs+uFJNCrVEqJjGajBg=="
}
