{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "WC0luEI0guNwSrroQP4vo1v5BksHhyQ6yh4K6kz/nHLnr4F62gJWvTWXCDgeKawNTRVGlijl6YeIsvyvAa/TDg=="
}
