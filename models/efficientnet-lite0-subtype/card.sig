{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "dVatgGT+JB8eaOKDJI+MYXFbm0WaVxdyeJDil2wpHIVn5FF1Ou3lK+NrDfx1epkrM2bWiWdhTO7fM4kNeIFiBw=="
}
