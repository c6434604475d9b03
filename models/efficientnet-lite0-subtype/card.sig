{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "UQyLiYi56UqNVTvy855Et3gjV6b9zNqbUFL1pjbVE/ImXNZcSPyGy9KClqN6WnFzHKiUeciXrRtgUZmhvkAuDA=="
}
