{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "4/VsiCljtSNwfFGOfH2RY1/f+I0TbBmD1FIsgL/nYCBWiqs1RQq8aT4ft7F1vCu61/aTez2jA8yNweHTxVFJCg=="
}
