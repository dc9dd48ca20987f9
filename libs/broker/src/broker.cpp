// placeholder until the broker layer lands
