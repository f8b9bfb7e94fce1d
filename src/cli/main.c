#include "dptrain/core.h"
#include <stdio.h>
int main(void) { puts("dptrain: under construction"); return 0; }
