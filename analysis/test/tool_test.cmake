# Runs pii-audit-score on small files and checks its contract: alerts as JSON lines on stdout,
# a bad line stops the replay with status 2 and a message naming the file and line.
execute_process(COMMAND ${TOOL} --replay ${DATA}/departed_and_stuffing.jsonl
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "good input: status ${rc}, stderr: ${err}")
endif()
string(REGEX MATCHALL "\n" lines "${out}")
list(LENGTH lines n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "expected 2 alerts, got ${n}:\n${out}")
endif()
string(FIND "${out}" [[{"time":"2024-03-05T02:00:00Z","actor":"clerk-0421","peer_group":"clerk","detector":"departed_or_dormant","score":95,"severity":"critical","explanation":"activity 3.1 days after the account was marked departed","evidence":[4]}]] at)
if(at EQUAL -1)
  message(FATAL_ERROR "departed alert missing or different:\n${out}")
endif()
string(FIND "${out}" [["detector":"login_abuse","score":73,"severity":"high","explanation":"6 failed logins within 1.0 minutes, then a successful login","evidence":[5,7,8,9,10,9001]}]] at)
if(at EQUAL -1)
  message(FATAL_ERROR "login alert missing or different:\n${out}")
endif()

execute_process(COMMAND ${TOOL} --replay - INPUT_FILE ${DATA}/bad_line_3.jsonl
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "bad input: expected status 2, got ${rc}")
endif()
if(NOT err STREQUAL "pii-audit-score: <stdin>:3: field \"rows\" must be a non-negative integer\n")
  message(FATAL_ERROR "unexpected error message: ${err}")
endif()
# Alerts before the bad line were already printed; nothing after it was read.
if(NOT out MATCHES "departed_or_dormant")
  message(FATAL_ERROR "alert before the bad line missing: ${out}")
endif()

execute_process(COMMAND ${TOOL} --replay ${DATA}/departed_and_stuffing.jsonl --threshold 101
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 64)
  message(FATAL_ERROR "out-of-range threshold: expected usage status 64, got ${rc}")
endif()

# Baselines carried over a restart: the departure marked in the first part still counts after
# --save-state / --load-state.
set(work ${CMAKE_CURRENT_BINARY_DIR}/tool_test_state)
file(MAKE_DIRECTORY ${work})
execute_process(COMMAND ${TOOL} --replay ${DATA}/restart_first_part.jsonl --save-state ${work}/state.bin
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out STREQUAL "")
  message(FATAL_ERROR "first part: status ${rc}, output '${out}', stderr: ${err}")
endif()
execute_process(COMMAND ${TOOL} --replay ${DATA}/restart_second_part.jsonl --load-state ${work}/state.bin
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "activity 3.1 days after the account was marked departed")
  message(FATAL_ERROR "second part after restore: status ${rc}, output '${out}', stderr: ${err}")
endif()
execute_process(COMMAND ${TOOL} --replay ${DATA}/restart_second_part.jsonl --load-state ${DATA}/bad_line_3.jsonl
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "not a pii_audit scorer state")
  message(FATAL_ERROR "a non-state file must be refused with status 1: ${rc} ${err}")
endif()
