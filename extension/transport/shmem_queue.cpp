// The shared-memory queue between backends (producers) and the background worker (consumer).
// A backend never does I/O for auditing: it copies its event in here under a lock and leaves.
#include "pii_audit_internal.h"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
}

#include <cstddef>
#include <cstdlib>
#include <cstring>


namespace {

// If the worker has not been draining for this long, waiting for space is pointless (audit
// database missing, extension not installed there, or a standby): drop and count at once.
constexpr long kConsumerGoneAfterMs = 10000;
// Producers wake the worker only once this much is queued (a quarter of the queue, or half the
// hot span, whichever is less); otherwise it wakes every pii_audit.flush_interval. Waking it for
// every event costs a signal, a context switch and a tiny transaction per event, which under load
// halves the throughput of the statements audited.
constexpr uint64 kWakeWorkerFraction = 4;
// While the worker keeps up, events are written to the first kHotSpanBytes of the ring only (see
// ring_buffer.h); queues smaller than twice that use their whole capacity.
constexpr uint64 kHotSpanBytes = 2 * 1024 * 1024;

struct SharedQueue {
    LWLock* lock;
    ConditionVariable space_available;
    pii_audit::RingState ring;
    uint64 capacity;
    uint64 next_seq;
    uint64 generation;  // changes whenever shared memory is re-created (start, crash restart)
    uint64 enqueued;
    uint64 persisted;
    uint64 dropped;
    uint64 releases;  // batches the worker released (a stall is a wait with no release)
    pg_atomic_uint64 capture_errors;
    pg_atomic_uint64 scorer_inputs;  // bumped when peer groups or departed accounts change
    ScorerStatus scorer;             // under lock
    int worker_pid;
    Latch* worker_latch;
    bool worker_ready;
    // A producer waited its whole queue_wait_timeout and the worker released nothing (no
    // batch at all, not merely too little for this producer under heavy load): it is
    // stopped or hung. Until it releases space again, producers drop and count at once, so a
    // stall costs clients one bounded wait, not one per statement.
    bool stalled;
    TimestampTz stalled_since;
    char worker_problem[256];  // set by the worker while storing fails
    TimestampTz last_ready;
    TimestampTz last_flush;
    char data[FLEXIBLE_ARRAY_MEMBER];
};

SharedQueue* queue = nullptr;
shmem_request_hook_type prev_shmem_request = nullptr;
shmem_startup_hook_type prev_shmem_startup = nullptr;

uint64 ring_capacity() {
    uint64 bytes = static_cast<uint64>(pii_audit_queue_size_kb) * 1024;
    return bytes / pii_audit::RingBuffer::kAlign * pii_audit::RingBuffer::kAlign;
}

Size shmem_size() { return add_size(offsetof(SharedQueue, data), ring_capacity()); }

uint64 hot_span(uint64 capacity) { return capacity >= 2 * kHotSpanBytes ? kHotSpanBytes : capacity; }

uint64 wake_threshold(uint64 capacity) {
    uint64 quarter = capacity / kWakeWorkerFraction;
    uint64 half_hot = hot_span(capacity) / 2;
    return quarter < half_hot ? quarter : half_hot;
}

pii_audit::RingBuffer ring_of(SharedQueue* q, pii_audit::RingState* state) {
    return pii_audit::RingBuffer(q->data, q->capacity, state, hot_span(q->capacity));
}

void request_shmem() {
    if (prev_shmem_request) prev_shmem_request();
    RequestAddinShmemSpace(shmem_size());
    RequestNamedLWLockTranche("pii_audit", 1);
}

void startup_shmem() {
    if (prev_shmem_startup) prev_shmem_startup();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    queue = static_cast<SharedQueue*>(ShmemInitStruct("pii_audit queue", shmem_size(), &found));
    if (!found) {
        memset(queue, 0, offsetof(SharedQueue, data));
        queue->lock = &(GetNamedLWLockTranche("pii_audit"))->lock;
        ConditionVariableInit(&queue->space_available);
        queue->capacity = ring_capacity();
        queue->next_seq = 1;
        queue->generation = static_cast<uint64>(GetCurrentTimestamp());
        pg_atomic_init_u64(&queue->capture_errors, 0);
        pg_atomic_init_u64(&queue->scorer_inputs, 0);
    }
    LWLockRelease(AddinShmemInitLock);
}

// A backend-lifetime encoding buffer: allocating during abort cleanup must not raise errors.
char* encode_buffer = nullptr;
size_t encode_buffer_size = 0;

char* reserve_encode_buffer(size_t size) {
    if (size <= encode_buffer_size) return encode_buffer;
    size_t want = size < 8192 ? 8192 : size;
    char* grown = static_cast<char*>(realloc(encode_buffer, want));
    if (grown == nullptr) return nullptr;
    encode_buffer = grown;
    encode_buffer_size = want;
    return grown;
}

bool consumer_alive(TimestampTz now) {
    return queue->worker_ready ||
           (queue->last_ready != 0 &&
            TimestampDifferenceExceeds(queue->last_ready, now, kConsumerGoneAfterMs) == false);
}

}  // namespace

void pii_audit_request_shmem(void) {
    prev_shmem_request = shmem_request_hook;
    shmem_request_hook = request_shmem;
    prev_shmem_startup = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
}

void pii_audit_count_capture_error(void) {
    if (queue) pg_atomic_fetch_add_u64(&queue->capture_errors, 1);
}

bool pii_audit_enqueue(pii_audit::EventView& event, bool allow_wait) {
    if (queue == nullptr) return false;
    const uint64 max_record = ring_of(queue, &queue->ring).max_record();
    size_t length = pii_audit::encoded_size(event);
    if (length > max_record) {
        // Only a statement text or column list of extreme size gets here: keep the event.
        event.field[pii_audit::kQueryText] = std::string_view();
        event.header.flags |= pii_audit::kFlagQueryTruncated;
        length = pii_audit::encoded_size(event);
    }
    char* buffer = length <= max_record ? reserve_encode_buffer(length) : nullptr;
    if (buffer == nullptr) {
        pii_audit_count_capture_error();
        LWLockAcquire(queue->lock, LW_EXCLUSIVE);
        queue->dropped++;
        LWLockRelease(queue->lock);
        return false;
    }
    pii_audit::encode_event(event, buffer);

    bool sleeping = false;
    TimestampTz deadline = 0;
    uint64 releases_at_wait = 0;
    for (;;) {
        LWLockAcquire(queue->lock, LW_EXCLUSIVE);
        uint64 seq = queue->next_seq;
        memcpy(buffer + offsetof(pii_audit::EventHeader, queue_seq), &seq, sizeof seq);
        if (ring_of(queue, &queue->ring).push(buffer, static_cast<uint32>(length))) {
            queue->next_seq++;
            queue->enqueued++;
            Latch* latch = queue->ring.head - queue->ring.tail >= wake_threshold(queue->capacity)
                               ? queue->worker_latch
                               : nullptr;
            LWLockRelease(queue->lock);
            if (sleeping) ConditionVariableCancelSleep();
            if (latch) SetLatch(latch);
            return true;
        }
        TimestampTz now = GetCurrentTimestamp();
        if (deadline != 0 && now >= deadline && !queue->stalled &&
            queue->releases == releases_at_wait) {
            queue->stalled = true;
            queue->stalled_since = now;
        }
        bool may_wait = allow_wait && pii_audit_on_queue_full == QUEUE_FULL_WAIT &&
                        pii_audit_queue_wait_timeout_ms > 0 && consumer_alive(now) &&
                        !queue->stalled && (deadline == 0 || now < deadline);
        if (!may_wait) {
            queue->dropped++;
            Latch* latch = queue->worker_latch;
            LWLockRelease(queue->lock);
            if (sleeping) ConditionVariableCancelSleep();
            if (latch) SetLatch(latch);  // the worker records the gap
            return false;
        }
        Latch* latch = queue->worker_latch;
        const uint64 releases_now = queue->releases;
        LWLockRelease(queue->lock);
        if (latch) SetLatch(latch);
        if (!sleeping) {
            // Prepare, then re-check before the first sleep so a wake-up cannot be missed.
            ConditionVariablePrepareToSleep(&queue->space_available);
            sleeping = true;
            deadline = TimestampTzPlusMilliseconds(now, pii_audit_queue_wait_timeout_ms);
            releases_at_wait = releases_now;
            continue;
        }
        long remaining = TimestampDifferenceMilliseconds(now, deadline);
        ConditionVariableTimedSleep(&queue->space_available, remaining > 0 ? remaining : 1,
                                    PG_WAIT_EXTENSION);
    }
}

void pii_audit_read_status(PiiAuditStatus* out) {
    memset(out, 0, sizeof *out);
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_SHARED);
    out->capacity = queue->capacity;
    out->depth = queue->ring.head - queue->ring.tail;
    out->enqueued = queue->enqueued;
    out->persisted = queue->persisted;
    out->dropped = queue->dropped;
    out->worker_pid = queue->worker_pid;
    out->last_flush = queue->last_flush;
    out->worker_ready = queue->worker_ready;
    out->stalled_since = queue->stalled ? queue->stalled_since : 0;
    strlcpy(out->worker_problem, queue->worker_problem, sizeof out->worker_problem);
    LWLockRelease(queue->lock);
    out->capture_errors = pg_atomic_read_u64(&queue->capture_errors);
}

void pii_audit_queue_attach_worker(Latch* latch, int pid) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->worker_latch = latch;
    queue->worker_pid = pid;
    LWLockRelease(queue->lock);
}

void pii_audit_queue_detach_worker(void) {
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->worker_latch = nullptr;
    queue->worker_pid = 0;
    queue->worker_ready = false;
    queue->worker_problem[0] = '\0';
    LWLockRelease(queue->lock);
    // Waiting backends re-check: with no consumer they stop waiting after kConsumerGoneAfterMs.
    ConditionVariableBroadcast(&queue->space_available);
}

void pii_audit_queue_set_ready(bool ready) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->worker_ready = ready;
    if (ready) queue->last_ready = GetCurrentTimestamp();
    LWLockRelease(queue->lock);
}

void pii_audit_queue_count_lost(uint64 events) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->dropped += events;
    LWLockRelease(queue->lock);
}

void pii_audit_queue_set_problem(const char* problem) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    strlcpy(queue->worker_problem, problem, sizeof queue->worker_problem);
    LWLockRelease(queue->lock);
}

uint64 pii_audit_queue_generation(void) { return queue->generation; }

bool pii_audit_queue_peek(char* buffer, size_t capacity, QueueBatch* batch) {
    // Producers write only past head and never before tail, so once head is read the bytes
    // between tail and head are stable and can be copied without holding the lock.
    pii_audit::RingState snapshot;
    LWLockAcquire(queue->lock, LW_SHARED);
    snapshot = queue->ring;
    LWLockRelease(queue->lock);
    batch->data = buffer;
    batch->size = ring_of(queue, &snapshot).peek(snapshot.tail, buffer, capacity,
                                                 &batch->end_position);
    return batch->size > 0;
}

void pii_audit_queue_release(const QueueBatch& batch, uint64 persisted) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->ring.tail = batch.end_position;
    queue->releases++;
    queue->stalled = false;
    queue->persisted += persisted;
    queue->last_flush = GetCurrentTimestamp();
    queue->last_ready = queue->last_flush;
    LWLockRelease(queue->lock);
    ConditionVariableBroadcast(&queue->space_available);
}

uint64 pii_audit_queue_dropped(void) {
    LWLockAcquire(queue->lock, LW_SHARED);
    uint64 dropped = queue->dropped;
    LWLockRelease(queue->lock);
    return dropped;
}

bool pii_audit_queue_empty(void) {
    LWLockAcquire(queue->lock, LW_SHARED);
    bool empty = queue->ring.head == queue->ring.tail;
    LWLockRelease(queue->lock);
    return empty;
}

void pii_audit_scorer_inputs_bump(void) {
    if (queue == nullptr) return;
    pg_atomic_fetch_add_u64(&queue->scorer_inputs, 1);
    LWLockAcquire(queue->lock, LW_SHARED);
    Latch* latch = queue->worker_latch;
    LWLockRelease(queue->lock);
    if (latch) SetLatch(latch);
}

uint64 pii_audit_scorer_inputs_generation(void) {
    return queue ? pg_atomic_read_u64(&queue->scorer_inputs) : 0;
}

void pii_audit_publish_scorer_status(const ScorerStatus& status) {
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->scorer = status;
    LWLockRelease(queue->lock);
}

void pii_audit_read_scorer_status(ScorerStatus* out) {
    memset(out, 0, sizeof *out);
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_SHARED);
    *out = queue->scorer;
    LWLockRelease(queue->lock);
    if (out->state[0] == '\0') strlcpy(out->state, "not started", sizeof out->state);
}
