from cowrite.cli import main

main()
