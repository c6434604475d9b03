{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "ayIM3zoVJzYhoIFGX8+4Sz6iZcvzRHbqEFtciOMktDl3ieGq/P0mwmHPchVHV7yDXpNiM2wV+/x0OwGwAoNZCw=="
}
