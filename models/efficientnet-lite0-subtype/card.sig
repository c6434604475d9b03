{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "vKx4BLKIuU04FRQazn+WyMb5UuFyxOGgj2KM0/GUXSRT6n3gjuyAz/riruz8jehq2/8MHbS8osFyLmRq7PUrCw=="
}
