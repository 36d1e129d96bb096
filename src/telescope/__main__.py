from telescope.cli import main

main()
