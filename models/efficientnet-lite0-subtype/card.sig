{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "RZHQQVVUD8u30kt7VNOUxaF/11Fi6KvmBj1KAmzOscXVZZgCgXs6mHMdodvRs8ZTtElpwsUNCr8hgWRaV/WPCA=="
}
