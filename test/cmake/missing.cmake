# Stand-in command for interop tests that cannot run: fails with the reason.
#   cmake -DWHY=<text> -P missing.cmake
message(FATAL_ERROR "${WHY}")
