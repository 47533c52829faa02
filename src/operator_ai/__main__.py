from operator_ai.cli.app import main

main()
