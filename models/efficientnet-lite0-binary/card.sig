{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "SWleJKu2xX69yQbUEKVP/cJ0+f6kbeWhLqijPnC5zBSbt8lSzJ8i8WjwelsyQNMjJNOpO4MB7jINzNrZ4ri/CA=="
}
