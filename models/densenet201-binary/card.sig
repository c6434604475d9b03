{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "Bn5ls8u0WhkTa6LXbaJqU9AW1x1+nYT6GynjpbEuXrFv33mZM575P2z57CV1sEoE3AJLV6oxq0isg1L7bN26Cw=="
}
