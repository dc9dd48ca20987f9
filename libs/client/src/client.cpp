// placeholder until the client layer lands
