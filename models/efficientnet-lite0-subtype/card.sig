{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "DjmPnFPj2BCLDV5KSYg+gUhyH5N3QEzdxRXwneg17yQkMcWxg9qXM4o/KnTVx/2YVwTXeHytlN/EUCEtPv44Ag=="
}
