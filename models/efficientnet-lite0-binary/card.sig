{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "yEYoziliTy53Dj+qjQANupJDAtCbMoEpdAl/f1Oro6BKF4yfX189ThBb0XxEvpXfVrDtFrIgxC1FaGzdoZFTAQ=="
}
