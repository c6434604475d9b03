{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "eqIngVnhshCQXLYJfIieaVTh5ZjCpt6KbYwLnQ6nAsf54RT+qk4ER92g59GVAzotUFPdEWbUWr4vVm3LEDDIAQ=="
}
