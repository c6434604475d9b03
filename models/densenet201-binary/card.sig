{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "+vJtODdoPbHT8Bu5+vymjOdWF+g4aIF268AhUvUTFiyOIwH+4kTQelbD1+IHPWn1y1VUfirZBnc5d5w6I1b6Bg=="
}
