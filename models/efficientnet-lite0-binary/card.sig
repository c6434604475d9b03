{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "rvOb+/ISeJNxw9jJ2XFBmJptSzEEIYtl9a1l7qVJNq4DNKNqtCgu+YNv92Le16eXtCeohaBW7HLwlYSML1YBDA=="
}
