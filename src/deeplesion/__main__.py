from deeplesion.cli import main

main()
