{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "az4bIs2n0pSLqunhah/NCL2w/H+CVO0gjcUx0ZnC93A0gx1DdpRpTZkX1FaAkKvtuUSAKyDFHrgCGzdth2j4Aw=="
}
