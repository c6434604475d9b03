{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "thBw07cFi60iKD/03NzH1ktmneGKgAnGsxhTnlcktIPZGGBpw/wTi0rIlDTSgOdVVrqlXUbChO0KtlXs9HRYCw=="
}
