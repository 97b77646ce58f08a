from allium.cli import main

main()
