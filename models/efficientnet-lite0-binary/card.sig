{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "oLmXKFUlcWzJEmRdeq6T0bNQMSrr2Ha+DX6t+OnVUdnSNTFH+nIMkkFB4j/NYSTXB+3iAW3SvxX3GFmOON0ZAw=="
}
