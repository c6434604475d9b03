{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "RrKChM8rMTw83/pcdaRR+f0kfopZ7N9VY+Cs2BO3g0MWi1Wti5Rwo7c7jJySN1iV8LmqBMRO2jg8H8f46xl5DQ=="
}
