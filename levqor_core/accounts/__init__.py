"""Developer accounts: the account model, sign-up and sign-in rules, and `flask accounts`."""
