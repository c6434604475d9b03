{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "gjQWPGrAOWYmV0mCblcGZI7PIWMzmOR9yE71laqUPyNtz6kPrOnB4Cp07/t6V9BofrGWIILMIT1kdpaIKQpPAQ=="
}
