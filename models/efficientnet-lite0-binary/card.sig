{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "UGTkigMdqTegakNz9S0j5BvFJ69JifqT9rFFCyxpxwgQb2CJIJdY1CbFvBN8RYYfKcGhkKDyVBquRPWHpjjVCw=="
}
