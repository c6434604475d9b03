{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "WFTlTqujTo6TJgPDlx5NXnQ+xUJWVXeKs4B9XjQGAs14N0c8SQfwJkdFMGVzxoiPjC8l3HuwUcuSRaOU3az6AA=="
}
