{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "b98iwZ6TTkh4TaGqaXnocpwExlvKsV/VQriHoNPk0TDlLbdpxRgK7sYjoufT/gAQ9txHTDyqHGtqiuJH1z0VBw=="
}
