{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "3qStvMplZ6IYzN+ECBBPI7xdFDY23DWzR2nKC9WHwGi/QsLE2sb14BSUXvi+RuL+Mfz2apwqCEx90/zUht6OBg=="
}
