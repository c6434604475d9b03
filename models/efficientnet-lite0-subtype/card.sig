{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "1P/sqBBVyS6QRfm7e7E3m1meFddedp/g3XjtgxEXDP/eCVsaB2s+VyUJv/x6neAg7XZpurts0R/aa5TioAXWAg=="
}
