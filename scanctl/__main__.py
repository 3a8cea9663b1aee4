from scanctl.cli import main

main()
