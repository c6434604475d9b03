{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "qNQHC6ClRUL1Py4122SheGnAEFNHH4Y1GC2pnEctIozpcWs+NGjs5TFbxVfxSgVwYzpOv9YPYO6sOaZiKqC+Bw=="
}
