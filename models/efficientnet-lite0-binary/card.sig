{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "9WtZHiFqS/slGSiofx/I2iwiTcAkn7lpCmXYrKIN6MS2aqMdE9LeYHnIb98cw6QTENqvMjJ72IAss3l1+Ys9CA=="
}
