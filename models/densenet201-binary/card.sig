{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "5SWMCFqe3D7l/YI+8R7ptmCLpLJ2C1pTEtP7Aucs0usPZTzlg1skBBYQHqQ0OQ7+rn2Hg+tk4jGJ7mP1FUopBA=="
}
