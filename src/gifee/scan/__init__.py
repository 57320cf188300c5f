"""The security scanner (Clair's job): version ordering per ecosystem, a local vulnerability
database loaded from advisory files, and the matcher that decides whether an installed package
version is affected. It never reaches the network on its own: data comes in through
`gifee vulndb update --from DIR`.
"""
