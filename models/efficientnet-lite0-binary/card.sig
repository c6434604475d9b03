{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "CsbtpnxR/0bvyYB2H/zgz7xQWjX0sITbyL/dxylkfOLkacZfIX5yRaicZ38gZOlTqfBt1lMFTVME6Xi/SDy4Aw=="
}
