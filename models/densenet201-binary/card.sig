{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "IDxA402tMHreSG96c+vz5zj+vitEOAxhQxvzdDDGSYE7Qph5H/lnO+POShw0c5edLM3i5MxCRnriFDpa1q2eBA=="
}
