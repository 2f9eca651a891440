-- Plain GET of the URL's path: one pre-built request, like wrk without a script.
dofile(os.getenv("LOAD_DIR") .. "/report.lua")
