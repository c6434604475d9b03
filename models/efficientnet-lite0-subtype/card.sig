{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "+GqxuMNp1K2nn+T/oyw0qJbFENA1feayDph55VfBvnrWlHRqKbLhLfyPo3ignrhIoDbeTSgD4KeOmJZTz8saDw=="
}
