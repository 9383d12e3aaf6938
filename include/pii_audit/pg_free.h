// Included by every header whose code must not depend on PostgreSQL. Such code is unit-tested
// without a server and reused by command-line tools, so PostgreSQL's headers (which redefine
// printf, snprintf and friends in port.h) must never leak into it.
// No include guard on purpose: the check must run at every inclusion (behind #pragma once it
// ran only at the first, and a PostgreSQL-free header included after postgres.h went unnoticed).

#if defined(POSTGRES_H) || defined(POSTGRES_FE_H)
#error "this pii_audit header is PostgreSQL-free: include it before postgres.h or in a separate translation unit"
#endif
