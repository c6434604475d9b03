{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "Ty1WkIoG8xddOwrdt7UV9EWljdCdsbzf+ByR7VCKF1JB/NTmtiJWRqlABXRDJ7dp2JR1OBtwPGCWei6Hi5diDg=="
}
