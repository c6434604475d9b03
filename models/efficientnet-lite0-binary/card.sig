{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "3pkhRzfcxAXkSUwu978GGxtyLj0psAYSfequpkwuST8vlqlnok06LehoANTDip77XsQFwnESqAWMteGP0LWXDQ=="
}
