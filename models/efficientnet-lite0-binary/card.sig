{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "oYbM8sNC3ofKuvLwRDhLkhKaCariOml/RvVKJ89x3q5VhAMjXUJnwHZRWyuYbLqYLdGk9Vbc5q09hRXH6uI8AQ=="
}
