"""``ichseq card``: a trained model's card."""

from __future__ import annotations

import json

from ..inference.card import card_markdown, model_card


def run(args) -> None:
    card = model_card(args.run)
    print(json.dumps(card, indent=2, default=str) if args.json else card_markdown(card), end="" if not args.json else "\n")
