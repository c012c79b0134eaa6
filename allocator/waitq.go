package allocator

// waitQueue is a pool's FIFO of waiting reservations with exact positions.
// Entries leave from the head (offers) or from anywhere (release, wait
// expiry); a Fenwick tree over the slots counts the live entries ahead of
// any one in O(log n), so `position` stays exact as the queue moves.
type waitQueue struct {
	base  uint64         // ticket of items[0]
	head  int            // index of the first slot that may be live
	items []*reservation // nil where an entry left
	fen   []int32        // Fenwick tree over items (1-based)
	live  int
	qty   int64 // total qty of live entries
}

// MaxWaiting bounds one pool's queue.
const MaxWaiting = 1 << 22

func (q *waitQueue) len() int { return q.live }

// push appends r and gives it its ticket.
func (q *waitQueue) push(r *reservation) {
	r.ticket = q.base + uint64(len(q.items))
	q.items = append(q.items, r)
	// Append to the Fenwick tree: node i covers (i-lowbit(i), i].
	i := len(q.items)
	low := i & -i
	q.fen = append(q.fen, 1+int32(q.prefix(i-1)-q.prefix(i-low)))
	q.live++
	q.qty += r.lines[0].qty
}

// prefix is the number of live entries among items[0:i].
func (q *waitQueue) prefix(i int) int {
	s := 0
	for ; i > 0; i -= i & -i {
		s += int(q.fen[i-1])
	}
	return s
}

func (q *waitQueue) add(i int, d int32) {
	for i++; i <= len(q.fen); i += i & -i {
		q.fen[i-1] += d
	}
}

// remove takes r out of the queue wherever it is.
func (q *waitQueue) remove(r *reservation) {
	i := int(r.ticket - q.base)
	if i < 0 || i >= len(q.items) || q.items[i] != r {
		panic("allocator: waiting reservation not in its queue")
	}
	q.items[i] = nil
	q.add(i, -1)
	q.live--
	q.qty -= r.lines[0].qty
	q.compact()
}

// peek returns the head of the queue, or nil.
func (q *waitQueue) peek() *reservation {
	for q.head < len(q.items) && q.items[q.head] == nil {
		q.head++
	}
	if q.head == len(q.items) {
		return nil
	}
	return q.items[q.head]
}

// position is r's 1-based place in the queue.
func (q *waitQueue) position(r *reservation) int64 {
	i := int(r.ticket - q.base)
	return int64(q.prefix(i+1) - q.prefix(q.head))
}

// compact drops the dead prefix once it is most of the queue, so memory is
// bounded by the live entries (amortised O(1) per removal).
func (q *waitQueue) compact() {
	q.peek()
	if q.head < 1024 || q.head < len(q.items)/2 {
		if q.live == 0 {
			q.base += uint64(len(q.items))
			q.items, q.fen, q.head = q.items[:0], q.fen[:0], 0
		}
		return
	}
	rest := q.items[q.head:]
	q.base += uint64(q.head)
	q.items = append(make([]*reservation, 0, len(rest)*2), rest...)
	q.head = 0
	q.fen = make([]int32, len(q.items))
	for i, r := range q.items {
		if r != nil {
			q.fen[i]++
		}
		if j := i + ((i + 1) & -(i + 1)); j < len(q.fen) {
			q.fen[j] += q.fen[i]
		}
	}
}

// each calls f for every live entry, head first.
func (q *waitQueue) each(f func(*reservation)) {
	for _, r := range q.items[q.head:] {
		if r != nil {
			f(r)
		}
	}
}
