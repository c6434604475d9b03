{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "7TLwTezooPUgPVm0GKREWXk2kt6af5ix2c4xEytj12Q6Fi7G7wF7mqOq+5vvu3l7kBGqQH/tc7pEA7SwPKPGCA=="
}
