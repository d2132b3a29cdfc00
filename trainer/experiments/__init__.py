"""Measurements outside the recipe (`reasonrec experiment ...`): jobs whose runs showed no gain, kept so their
reports can be regenerated and their questions asked again (heads on reasoning states, the popularity prior's
weight, a head on the rating state, Surprise's SVD row). Nothing of the service or the recipe imports them."""
