{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "AC0BVlCvBqHz2zdaeMdoSQ7WkGATvJuTme+C5/gKjL75lJpbYJ9aET0CB5QVjcnmDcAZGM+y7qeogNHPkmY/Cw=="
}
