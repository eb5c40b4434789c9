from pmcp.cli import main

main()
