{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "fN1ATXvoj0lHyy/a7sNEgv/6SG9bJbEaXinBVm/JlLes2/u/VGxMMvJ5zQ9nvUyscHJsmBSmRiPxQZNDC5bAAQ=="
}
