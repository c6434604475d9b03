{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "n40QPnJsyltErGBLubf4EGaOm0QzFW9h9X+27/NqoPOTSgvZr2hoqxzc6qwf37a+f2jz/nQYZewCkMu5YjvFCw=="
}
